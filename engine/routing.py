"""Entropy routing (CoReLLa): send the samples the CRM is least sure about to the LLM.

Each sample has the CRM's click probability `p_crm`, the LLM's `p_llm` and the binary entropy
of `p_crm` in bits. With a threshold t, samples with entropy > t take the LLM's probability.
Everything here is numpy only. `RouterData` precomputes what a slider move can reuse: sorted
entropies (share <-> threshold by searchsorted), samples in entropy order (whatever is routed is
a prefix, so LogLoss/ACC are cumulative-sum lookups) and one dense rank scale for both models'
scores (the mix's AUC is a counting sort, no sort per move): ~0.3 ms at 100k samples.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from engine.metrics import EPS

BUCKET_NAMES = ("low uncertainty", "medium uncertainty", "high uncertainty")


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """Entropy in bits of Bernoulli(p): 0 at p in {0, 1}, 1 at 0.5; p is clipped to [0, 1]."""
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    q = 1.0 - p
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(np.where(p > 0, p * np.log2(p), 0.0) + np.where(q > 0, q * np.log2(q), 0.0))
    return np.clip(h, 0.0, 1.0)


def route_mask(entropy: np.ndarray, threshold: float) -> np.ndarray:
    """True where the sample goes to the LLM (entropy strictly above the threshold)."""
    return np.asarray(entropy, dtype=np.float64) > threshold


def share_for_threshold(entropy: np.ndarray, threshold: float) -> float:
    """Fraction of samples the LLM scores at this threshold (0.0 for no samples)."""
    entropy = np.asarray(entropy, dtype=np.float64)
    return float(np.mean(entropy > threshold)) if entropy.size else 0.0


def mixed_probs(p_crm: np.ndarray, p_llm: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The routed prediction: the LLM's probability where `mask`, the CRM's elsewhere."""
    return np.where(mask, np.asarray(p_llm, dtype=np.float64), np.asarray(p_crm, np.float64))


def _nice_in(lo: float, hi: float) -> float:
    """A value with as few decimals as possible in [lo, hi) (lo itself if none is found)."""
    for digits in range(0, 10):
        scale = 10.0**digits
        candidate = math.ceil(lo * scale) / scale
        if lo <= candidate < hi:
            return candidate
    return lo


def _feasible_counts(sorted_entropy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts routable by some threshold (ascending, 0 and n included) and, per count, the
    lower end of its threshold interval [lo, next distinct entropy); -inf for count n."""
    values, counts = np.unique(sorted_entropy, return_counts=True)
    n = sorted_entropy.size
    above = n - np.cumsum(counts)  # routed count when the threshold equals values[j]
    ks = np.concatenate([above[::-1], [n]])
    lows = np.concatenate([values[::-1], [-np.inf]])
    return ks, lows


def _threshold_from_sorted(sorted_entropy: np.ndarray, ks: np.ndarray, lows: np.ndarray,
                           share: float) -> float:
    n = sorted_entropy.size
    if n == 0:
        return 1.0
    target = float(np.clip(share, 0.0, 1.0)) * n
    i = int(np.searchsorted(ks, target, side="left"))  # ks[i] >= target
    if i == len(ks) or (i > 0 and target - ks[i - 1] <= ks[i] - target):
        i -= 1  # the smaller count when it is as close: never spend budget for nothing
    k = int(ks[i])
    if k == n:  # every sample: a threshold below the smallest entropy
        smallest = float(sorted_entropy[0])
        return 0.0 if smallest > 0 else float(np.nextafter(smallest, -np.inf))
    hi = float(sorted_entropy[n - k]) if k > 0 else math.inf
    return _nice_in(float(lows[i]), hi)


def threshold_for_share(entropy: np.ndarray, share: float) -> float:
    """The threshold that routes the `share` most uncertain samples to the LLM.

    Tied entropies are routed together, so the routed fraction is the achievable one closest
    to `share` (the smaller one when two are as close); share 0 routes none, share 1 all. The
    threshold is the value with fewest decimals in its interval (e.g. 0.87, not 0.8713...).
    """
    s = np.sort(np.asarray(entropy, dtype=np.float64))
    ks, lows = _feasible_counts(s)
    return _threshold_from_sorted(s, ks, lows, share)


def _auc_from_ranks(neg: np.ndarray, pos: np.ndarray, levels: int) -> float:
    """AUC from dense integer ranks of the scores (equal score, equal rank; ties count half):
    a counting sort of the negatives instead of a sort, O(n + levels)."""
    if neg.size == 0 or pos.size == 0:
        return float("nan")
    counts = np.bincount(neg, minlength=levels)
    below = np.cumsum(counts) - counts  # negatives scored strictly lower than each rank
    twice = 2 * int(below[pos].sum()) + int(counts[pos].sum())
    return twice / (2.0 * neg.size * pos.size)


def _auc(labels: np.ndarray, probs: np.ndarray) -> float:
    levels, ranks = np.unique(np.asarray(probs, dtype=np.float64), return_inverse=True)
    y = np.asarray(labels) > 0.5
    return _auc_from_ranks(ranks[~y], ranks[y], levels.size)


def _logloss_terms(labels: np.ndarray, p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return -np.where(labels, np.log(p), np.log(1 - p))


@dataclass(eq=False)
class RouterData:
    """One routed method on one split, ready for fast threshold moves."""

    labels: np.ndarray
    p_crm: np.ndarray
    p_llm: np.ndarray
    entropy: np.ndarray | None = None  # None: binary_entropy(p_crm)
    _cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.float64)
        self.p_crm = np.asarray(self.p_crm, dtype=np.float64)
        self.p_llm = np.asarray(self.p_llm, dtype=np.float64)
        self.entropy = (binary_entropy(self.p_crm) if self.entropy is None
                        else np.asarray(self.entropy, dtype=np.float64))
        n = self.labels.size
        if not (self.p_crm.size == self.p_llm.size == self.entropy.size == n):
            raise ValueError("labels, p_crm, p_llm and entropy must have the same length")
        y = self.labels > 0.5
        self._y = y
        self.sorted_entropy = np.sort(self.entropy)
        self._ks, self._lows = _feasible_counts(self.sorted_entropy)
        # Everything below is in entropy order, most uncertain first: whatever a threshold
        # sends to the LLM is a prefix, so a move needs no mask, only prefix lengths.
        order = np.argsort(-self.entropy, kind="stable")
        y_o = y[order]
        # One dense rank scale for both models' scores: AUC only needs the order.
        levels, ranks = np.unique(np.concatenate([self.p_crm, self.p_llm]),
                                  return_inverse=True)
        self._levels = levels.size
        ranks = ranks.astype(np.intp)
        c = self._cache
        c["neg_before"] = np.concatenate([[0], np.cumsum(~y_o)])
        c["pos_before"] = np.concatenate([[0], np.cumsum(y_o)])
        for i, (name, p) in enumerate((("crm", self.p_crm), ("llm", self.p_llm))):
            r = ranks[i * n:(i + 1) * n][order]
            c[f"{name}_neg_ranks"], c[f"{name}_pos_ranks"] = r[~y_o], r[y_o]
            c[f"{name}_ll"] = _logloss_terms(y, p)[order]
            c[f"{name}_right"] = ((p >= 0.5) == y)[order].astype(np.float64)
        self._cum_ll = np.concatenate([[0.0], np.cumsum(c["llm_ll"] - c["crm_ll"])])
        self._cum_right = np.concatenate([[0.0], np.cumsum(c["llm_right"] - c["crm_right"])])
        self._base = {name: self._mix_metrics(0 if name == "crm" else n)
                      for name in ("crm", "llm")}

    @property
    def n(self) -> int:
        return int(self.labels.size)

    def _mix_metrics(self, k: int) -> dict[str, float]:
        """Metrics when the k most uncertain samples take the LLM's probability."""
        if self.n == 0:
            return {"auc": math.nan, "logloss": math.nan, "acc": math.nan}
        c = self._cache
        kn, kp = int(c["neg_before"][k]), int(c["pos_before"][k])
        neg = np.concatenate([c["llm_neg_ranks"][:kn], c["crm_neg_ranks"][kn:]])
        pos = np.concatenate([c["llm_pos_ranks"][:kp], c["crm_pos_ranks"][kp:]])
        return {"auc": _auc_from_ranks(neg, pos, self._levels),
                "logloss": float((c["crm_ll"].sum() + self._cum_ll[k]) / self.n),
                "acc": float((c["crm_right"].sum() + self._cum_right[k]) / self.n)}

    @property
    def crm_correct(self) -> np.ndarray:
        """Whether the CRM's prediction (at 0.5) matches the label, per sample."""
        return (self.p_crm >= 0.5) == self._y

    def n_routed(self, threshold: float) -> int:
        return self.n - int(np.searchsorted(self.sorted_entropy, threshold, side="right"))

    def share_for_threshold(self, threshold: float) -> float:
        return self.n_routed(threshold) / self.n if self.n else 0.0

    def threshold_for_share(self, share: float) -> float:
        return _threshold_from_sorted(self.sorted_entropy, self._ks, self._lows, share)

    def mask(self, threshold: float) -> np.ndarray:
        return route_mask(self.entropy, threshold)

    def metrics_at(self, threshold: float) -> dict[str, float]:
        """AUC/LogLoss/ACC of CRM only, LLM only and the routed mix, plus the LLM's share."""
        k = self.n_routed(threshold)
        out: dict[str, float] = {"threshold": float(threshold), "n": self.n, "n_llm": k,
                                 "llm_share": k / self.n if self.n else 0.0}
        for prefix, values in (("crm", self._base["crm"]), ("llm", self._base["llm"]),
                               ("routed", self._mix_metrics(k))):
            out.update({f"{prefix}_{key}": value for key, value in values.items()})
        return out


def quality_curve(data: RouterData, points: int = 101) -> pd.DataFrame:
    """The routed mix's quality at `points` evenly spaced LLM shares from 0 to 1.

    `target_share` is the asked share, `llm_share` the achieved one (ties route together).
    """
    rows = []
    for target in np.linspace(0.0, 1.0, points):
        threshold = data.threshold_for_share(float(target))
        m = data.metrics_at(threshold)
        rows.append({"target_share": float(target), "llm_share": m["llm_share"],
                     "threshold": threshold, "auc": m["routed_auc"],
                     "logloss": m["routed_logloss"], "acc": m["routed_acc"]})
    return pd.DataFrame(rows)


def _acc(labels: np.ndarray, probs: np.ndarray) -> float:
    return float(np.mean((probs >= 0.5) == (labels > 0.5))) if labels.size else math.nan


def bucket_table(data: RouterData, edges: tuple[float, ...] = (1 / 3, 2 / 3)) -> pd.DataFrame:
    """CRM vs LLM per entropy bucket; `edges` are quantiles of the entropy (the default gives
    three equal-sized confidence groups). A sample equal to an edge falls in the lower bucket.
    """
    cuts = np.quantile(data.entropy, edges) if data.n else np.zeros(len(edges))
    bucket = np.searchsorted(cuts, data.entropy, side="left")
    names = BUCKET_NAMES if len(edges) == 2 else [f"bucket {i + 1}"
                                                   for i in range(len(edges) + 1)]
    rows = []
    for i, name in enumerate(names):
        m = bucket == i
        y, pc, pl = data.labels[m], data.p_crm[m], data.p_llm[m]
        rows.append({"bucket": name, "n": int(m.sum()),
                     "entropy_min": float(data.entropy[m].min()) if m.any() else math.nan,
                     "entropy_max": float(data.entropy[m].max()) if m.any() else math.nan,
                     "crm_auc": _auc(y, pc), "crm_acc": _acc(y, pc),
                     "llm_auc": _auc(y, pl), "llm_acc": _acc(y, pl)})
    return pd.DataFrame(rows)


def reliability(p: np.ndarray, labels: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Calibration: equal-width bins of the predicted probability on [0, 1]; empty bins are
    left out. Columns bin, bin_lo, bin_hi, mean_pred, click_rate, count."""
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    y = np.asarray(labels, dtype=np.float64)
    idx = np.minimum((p * bins).astype(np.int64), bins - 1)  # p == 1 joins the last bin
    count = np.bincount(idx, minlength=bins)
    sum_p = np.bincount(idx, weights=p, minlength=bins)
    sum_y = np.bincount(idx, weights=y, minlength=bins)
    keep = count > 0
    b = np.arange(bins)[keep]
    return pd.DataFrame({"bin": b, "bin_lo": b / bins, "bin_hi": (b + 1) / bins,
                         "mean_pred": sum_p[keep] / count[keep],
                         "click_rate": sum_y[keep] / count[keep], "count": count[keep]})


def cost_per_1k(share: float, crm_ms: float | None, llm_ms: float | None) -> dict[str, float]:
    """LLM calls and estimated milliseconds per 1,000 samples: the CRM scores every sample,
    the LLM the routed share. ms is NaN when a latency is unknown."""
    calls = 1000.0 * float(share)
    known = all(v is not None and math.isfinite(float(v)) for v in (crm_ms, llm_ms))
    ms = 1000.0 * float(crm_ms) + calls * float(llm_ms) if known else math.nan
    return {"llm_calls_per_1k": calls, "ms_per_1k": ms}


def latencies(cost: Any) -> tuple[float | None, float | None]:
    """(crm_ms_per_sample, llm_ms_per_sample) from a method's cost JSON (str or dict);
    None for whatever is missing or unreadable."""
    if isinstance(cost, str):
        try:
            cost = json.loads(cost)
        except ValueError:
            cost = None
    if not isinstance(cost, dict):
        return None, None

    def number(key: str) -> float | None:
        try:
            value = float(cost[key])
        except (KeyError, TypeError, ValueError):
            return None
        return value if math.isfinite(value) else None

    return number("crm_ms_per_sample"), number("llm_ms_per_sample")


def method_settings(methods: pd.DataFrame, method: str) -> dict[str, float | None]:
    """From the store's `methods` table: the method's measured latencies per sample
    (`crm_ms`, `llm_ms`, from its cost JSON) and the entropy threshold it was run with
    (`threshold`, from its config's "threshold" or "entropy_threshold"); None when absent."""
    out: dict[str, float | None] = {"crm_ms": None, "llm_ms": None, "threshold": None}
    if methods is None or "method" not in methods or not (methods["method"] == method).any():
        return out
    row = methods[methods["method"] == method].iloc[0]
    out["crm_ms"], out["llm_ms"] = latencies(row.get("cost"))
    config = row.get("config")
    try:
        config = json.loads(config) if isinstance(config, str) else config
    except ValueError:
        config = None
    if isinstance(config, dict):
        for key in ("threshold", "entropy_threshold"):
            try:
                value = float(config[key])
            except (KeyError, TypeError, ValueError):
                continue
            if 0.0 <= value <= 1.0:
                out["threshold"] = value
                break
    return out
