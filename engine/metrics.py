"""CTR metrics: AUC, LogLoss, ACC, UAUC, overall and per segment.

AUC is computed from ranks with numpy (tested against scikit-learn) because the router lab
recomputes it for every slider position and sklearn's input validation dominates at 100k rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import rankdata

EPS = 1e-7
METRICS = ("auc", "logloss", "ece", "acc", "uauc")
ECE_BINS = 10


def auc(labels: np.ndarray, probs: np.ndarray) -> float:
    """Area under the ROC curve (ties count half); NaN when only one class is present."""
    y = np.asarray(labels, dtype=bool)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(probs)  # average ranks handle ties like sklearn
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def logloss(labels: np.ndarray, probs: np.ndarray) -> float:
    p = np.clip(np.asarray(probs, dtype=np.float64), EPS, 1 - EPS)
    y = np.asarray(labels, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def ece(labels: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error: over equal-width probability bins, the sample-weighted
    mean of |mean prediction - observed click rate|."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 0.0, 1.0)
    y = np.asarray(labels, dtype=np.float64)
    if p.size == 0:
        return float("nan")
    idx = np.minimum((p * bins).astype(np.int64), bins - 1)
    count = np.bincount(idx, minlength=bins)
    gap = np.abs(np.bincount(idx, weights=p, minlength=bins)
                 - np.bincount(idx, weights=y, minlength=bins))
    return float(gap.sum() / count.sum())


def accuracy(labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> float:
    return float(np.mean((np.asarray(probs) >= threshold) == np.asarray(labels, dtype=bool)))


def uauc(labels: np.ndarray, probs: np.ndarray, users: np.ndarray) -> float:
    """Mean per-user AUC over users with both classes (unweighted)."""
    frame = pd.DataFrame({"u": users, "y": np.asarray(labels, dtype=bool), "p": probs})
    # rank within user in one vectorised pass instead of a Python loop per user
    frame["r"] = frame.groupby("u")["p"].rank(method="average")
    grouped = frame.groupby("u")
    n = grouped["y"].size()
    n_pos = grouped["y"].sum()
    rank_pos = frame["r"].where(frame["y"], 0.0).groupby(frame["u"]).sum()
    n_neg = n - n_pos
    valid = (n_pos > 0) & (n_neg > 0)
    if not valid.any():
        return float("nan")
    per_user = (rank_pos[valid] - n_pos[valid] * (n_pos[valid] + 1) / 2) / (
        n_pos[valid] * n_neg[valid])
    return float(per_user.mean())


def binary_metrics(labels: np.ndarray, probs: np.ndarray,
                   users: np.ndarray | None = None) -> dict[str, float]:
    out = {"auc": auc(labels, probs), "logloss": logloss(labels, probs),
           "ece": ece(labels, probs), "acc": accuracy(labels, probs)}
    if users is not None:
        out["uauc"] = uauc(labels, probs, users)
    return out


def segment_masks(samples: pd.DataFrame) -> dict[str, np.ndarray]:
    """Boolean masks of the reported segments over the given samples."""
    cold = samples["cold_user"].to_numpy(dtype=bool)
    tail = samples["long_tail_item"].to_numpy(dtype=bool)
    return {"all": np.ones(len(samples), dtype=bool), "cold_user": cold, "warm_user": ~cold,
            "long_tail_item": tail, "head_item": ~tail}


def segment_metrics(samples: pd.DataFrame, probs: np.ndarray) -> pd.DataFrame:
    """Long table (segment, metric, value, n, n_pos) for one model's probabilities on
    `samples`; AUC and UAUC are NaN where a segment holds one label class."""
    rows = []
    labels = samples["label"].to_numpy()
    users = samples["user"].to_numpy()
    for segment, mask in segment_masks(samples).items():
        n = int(mask.sum())
        if n == 0:
            continue
        n_pos = int(labels[mask].sum())
        values = binary_metrics(labels[mask], probs[mask], users[mask])
        rows += [(segment, name, value, n, n_pos) for name, value in values.items()]
    return pd.DataFrame(rows, columns=["segment", "metric", "value", "n", "n_pos"])


LOW_N = 100  # a metric on fewer samples than this, or on fewer than LOW_CLASS of a class,
LOW_CLASS = 10  # is shown as low-confidence


def metric_caveat(metric: str, value: float, n: float, n_pos: float, split: str = "") -> str:
    """Why a metric is missing or shaky, in a few words ("" when it is neither):
    "one class in test", "no user with both labels", "low n: 42 samples, 3 positives"."""
    where = f" in {split}" if split else ""
    # missing counts (NaN or NA): a run from before 0.3 did not store n_pos
    known = not (pd.isna(n) or pd.isna(n_pos))
    if pd.isna(value):
        if known and (n_pos == 0 or n_pos == n):
            return f"one class{where}"
        if metric == "uauc":
            return "no user with both labels"
        return "undefined"
    if known and (n < LOW_N or min(n_pos, n - n_pos) < LOW_CLASS):
        return f"low n: {int(n):,} samples, {int(n_pos):,} positives"
    return ""
