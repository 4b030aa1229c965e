"""Methods side by side on the same samples: the Compare page, the home page and `show`.

A run stores each method's probabilities on the rows it scored: the CRMs on the whole test
split, the LLM methods on a seeded analysed subset. Metrics stored per method are therefore
on different rows, and putting them in one table compares samples as much as methods (a
CRM on 500 analysed rows against itself on 9,450 differs by more than most method gaps).
Everything here first keeps the samples every chosen method scored, then computes metrics,
segments (cold users, long-tail items and the reference CRM's entropy quartiles), costs,
the quality-vs-cost Pareto front and head-to-head wins on exactly those rows.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from engine.metrics import LOW_CLASS, LOW_N, auc, binary_metrics, segment_masks
from engine.routing import binary_entropy

HYBRIDS = ("corella", "sllmr", "llmcf", "cora", "coco")  # the five methods' headline names
ENTROPY_BUCKETS = 4
COST_FIELDS = ("llm_calls_per_1k", "infer_ms_per_1k", "train_seconds", "offline_llm_seconds")


def family(method: str) -> str:
    """The hybrid a stored variant belongs to ("coco_mean_pool" -> "coco"), else "crm"."""
    for name in HYBRIDS:
        if method == name or method.startswith(f"{name}_"):
            return name
    return "crm"


def missing_hybrids(methods: list[str]) -> list[str]:
    """The five methods' headlines a run lacks."""
    return [h for h in HYBRIDS if h not in methods]


def same_samples(predictions: pd.DataFrame, samples: pd.DataFrame, methods: list[str]
                 ) -> pd.DataFrame:
    """The samples every method in `methods` scored: sample_id, label, user, the segment
    flags and one probability column per method (predictions: RunReader.predictions's wide
    frame; samples: its samples frame)."""
    missing = [m for m in methods if m not in predictions]
    if missing:
        raise KeyError(f"no predictions for {', '.join(missing)}")
    kept = predictions.dropna(subset=list(methods))[["sample_id", "label", *methods]]
    flags = samples[["sample_id", "user", "cold_user", "long_tail_item"]]
    return kept.merge(flags, on="sample_id", how="inner").reset_index(drop=True)


def entropy_labels(k: int = ENTROPY_BUCKETS) -> list[str]:
    return [f"entropy q{i + 1}" + (" (sure)" if i == 0 else " (unsure)" if i == k - 1 else "")
            for i in range(k)]


def entropy_buckets(p: np.ndarray, k: int = ENTROPY_BUCKETS) -> np.ndarray:
    """Each sample's quartile (k-quantile) of the reference model's entropy, as a label;
    ties share a bucket, so buckets may be uneven."""
    h = binary_entropy(p)
    ranks = pd.Series(h).rank(method="min", pct=True).to_numpy()
    index = np.minimum((ranks * k - 1e-9).astype(int), k - 1)
    return np.array(entropy_labels(k), dtype=object)[index]


def segments(common: pd.DataFrame, reference: str | None) -> dict[str, np.ndarray]:
    """Boolean masks over `common`: all, the user/item segments, and the reference CRM's
    entropy buckets (when a reference is given)."""
    out = segment_masks(common)
    if reference is not None:
        buckets = entropy_buckets(common[reference].to_numpy())
        out |= {label: buckets == label for label in entropy_labels()}
    return out


def metrics(common: pd.DataFrame, methods: list[str], reference: str | None = None
            ) -> pd.DataFrame:
    """Long frame (method, segment, metric, value, n, n_pos) on the common samples."""
    labels = common["label"].to_numpy()
    users = common["user"].to_numpy()
    rows = []
    for segment, mask in segments(common, reference).items():
        n = int(mask.sum())
        if n == 0:
            continue
        n_pos = int(labels[mask].sum())
        for method in methods:
            values = binary_metrics(labels[mask], common[method].to_numpy()[mask], users[mask])
            rows += [(method, segment, metric, value, n, n_pos)
                     for metric, value in values.items()]
    return pd.DataFrame(rows, columns=["method", "segment", "metric", "value", "n", "n_pos"])


def shaky(n: int, n_pos: int) -> bool:
    """Too few samples, or too few of one class, for a metric to be read alone."""
    return n < LOW_N or min(n_pos, n - n_pos) < LOW_CLASS


def costs(methods: pd.DataFrame) -> pd.DataFrame:
    """Per method its family and costs: LLM calls and measured inference ms per 1,000
    samples, training seconds, offline LLM seconds (teacher scoring, generated reasoning)."""
    out = methods[["method", "kind"]].copy()
    out["family"] = out["method"].map(family)
    extra = [json.loads(c) if isinstance(c, str) and c else {} for c in methods["cost"]]
    for field in COST_FIELDS:
        column = methods[field] if field in methods else pd.Series([np.nan] * len(methods))
        out[field] = [float(v) if pd.notna(v) else float(x.get(field, np.nan))
                      for v, x in zip(column.to_numpy(), extra)]
    out["offline_llm_seconds"] = out["offline_llm_seconds"].fillna(0.0)
    return out.reset_index(drop=True)


def pareto_front(cost: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """True where no other point is at most as costly and at least as good, and strictly
    better in one of the two (NaN points are never on the front)."""
    cost, quality = np.asarray(cost, dtype=float), np.asarray(quality, dtype=float)
    ok = ~(np.isnan(cost) | np.isnan(quality))
    front = np.zeros(len(cost), dtype=bool)
    for i in np.flatnonzero(ok):
        better = ok & (cost <= cost[i]) & (quality >= quality[i]) & (
            (cost < cost[i]) | (quality > quality[i]))
        front[i] = not better.any()
    return front


def head_to_head(common: pd.DataFrame, a: str, b: str, reference: str | None = None
                 ) -> pd.DataFrame:
    """Per segment: n, AUC of a and of b, b - a, and which wins ("tie" where the gap is
    below one standard error of the AUC difference, or a metric is undefined)."""
    labels = common["label"].to_numpy()
    rows = []
    for segment, mask in segments(common, reference).items():
        n, n_pos = int(mask.sum()), int(labels[mask].sum())
        if n == 0:
            continue
        auc_a = auc(labels[mask], common[a].to_numpy()[mask])
        auc_b = auc(labels[mask], common[b].to_numpy()[mask])
        gap = auc_b - auc_a
        se = auc_difference_se(labels[mask], common[a].to_numpy()[mask],
                               common[b].to_numpy()[mask])
        if np.isnan(gap) or abs(gap) <= se:
            winner = "tie"
        else:
            winner = b if gap > 0 else a
        rows.append({"segment": segment, "n": n, "n_pos": n_pos, "auc_a": auc_a,
                     "auc_b": auc_b, "gap": gap, "se": se, "winner": winner,
                     "shaky": shaky(n, n_pos)})
    return pd.DataFrame(rows, columns=["segment", "n", "n_pos", "auc_a", "auc_b", "gap", "se",
                                       "winner", "shaky"])


def auc_difference_se(labels: np.ndarray, p_a: np.ndarray, p_b: np.ndarray) -> float:
    """Standard error of AUC(b) - AUC(a) on the same samples (DeLong's paired variance);
    NaN with one class."""
    y = np.asarray(labels, dtype=bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos < 2 or neg < 2:
        return float("nan")
    components = []
    for p in (np.asarray(p_a, dtype=float), np.asarray(p_b, dtype=float)):
        x, z = p[y], p[~y]
        # structural components: per positive, the share of negatives it outranks, and
        # per negative the share of positives above it (ties half); sorted searches, so
        # memory stays linear in the samples
        zs, xs = np.sort(z), np.sort(x)
        below, upto = np.searchsorted(zs, x, "left"), np.searchsorted(zs, x, "right")
        v10 = (below + 0.5 * (upto - below)) / neg
        below, upto = np.searchsorted(xs, z, "left"), np.searchsorted(xs, z, "right")
        v01 = (pos - upto + 0.5 * (upto - below)) / pos
        components.append((v10, v01))
    d10 = components[1][0] - components[0][0]
    d01 = components[1][1] - components[0][1]
    variance = d10.var(ddof=1) / pos + d01.var(ddof=1) / neg
    return float(np.sqrt(max(variance, 0.0)))


def disagreements(common: pd.DataFrame, a: str, b: str, k: int = 20) -> pd.DataFrame:
    """The k samples where a and b disagree most, with which one is closer to the label."""
    gap = (common[b] - common[a]).to_numpy()
    order = np.argsort(-np.abs(gap), kind="stable")[:k]
    out = common.iloc[order][["sample_id", "user", "label", a, b]].copy()
    out["gap"] = gap[order]
    label = out["label"].to_numpy()
    closer_b = np.abs(out[b].to_numpy() - label) < np.abs(out[a].to_numpy() - label)
    out["closer"] = np.where(closer_b, b, a)
    return out.reset_index(drop=True)


def run_metrics(reader, split: str = "test", methods: list[str] | None = None
                ) -> tuple[pd.DataFrame, int]:
    """Every stored method (or `methods`) of a run (engine.store.RunReader) on the samples
    all of them scored in `split`: the long metrics frame and that sample count. A method
    that scored no sample of the split is left out rather than emptying the table."""
    predictions = reader.predictions(split)
    if predictions.empty:
        return pd.DataFrame(columns=["method", "segment", "metric", "value", "n", "n_pos"]), 0
    names = [m for m in (methods or reader.methods()["method"].tolist())
             if m in predictions and predictions[m].notna().any()]
    common = same_samples(predictions, reader.samples(split), names)
    return metrics(common, names), len(common)


def group_of(reader) -> str | None:
    """The --seeds group a run belongs to (None: a single run)."""
    return reader.run_info()["config"].get("request", {}).get("group")


def group_runs(runs_dir, reader) -> list[str]:
    """The ids of the runs in `reader`'s group, by seed; [its own id] outside a group."""
    from engine.store import list_runs, open_run

    group = group_of(reader)
    if group is None:
        return [reader.run_id]
    members = []
    for run_id in list_runs(runs_dir, sweep=False).query("error == ''")["run_id"]:
        with open_run(runs_dir, run_id) as other:
            info = other.run_info()
            if info["config"].get("request", {}).get("group") == group:
                members.append((int(info["seed"]), run_id))
    return [run_id for _, run_id in sorted(members)]


def seed_spread(runs_dir, run_ids: list[str], split: str = "test",
                methods: list[str] | None = None) -> pd.DataFrame:
    """Per method, segment and metric over a group's runs (each on the samples all its
    methods scored): mean, std (ddof 1), the runs it is in and the mean n."""
    from engine.store import open_run

    frames = []
    for run_id in run_ids:
        with open_run(runs_dir, run_id) as reader:
            long, _ = run_metrics(reader, split, methods)
        frames.append(long.assign(run=run_id))
    every = pd.concat(frames, ignore_index=True)
    grouped = every.groupby(["method", "segment", "metric"], sort=False)
    out = grouped["value"].agg(mean="mean", std="std", runs="count").reset_index()
    out["n"] = grouped["n"].mean().to_numpy()
    return out


def spread_text(spread: pd.DataFrame, segment: str = "all",
                metrics_shown: tuple[str, ...] = ("auc", "logloss", "uauc")) -> pd.DataFrame:
    """method x metric as "mean ± std (k runs)" text for one segment."""
    part = spread[(spread["segment"] == segment) & spread["metric"].isin(metrics_shown)]
    text = [f"{m:.4f} ± {s:.4f}" if pd.notna(s) else (f"{m:.4f}" if pd.notna(m) else "n/a")
            for m, s in zip(part["mean"], part["std"])]
    wide = part.assign(text=text).pivot(index="method", columns="metric", values="text")
    wide = wide[[m for m in metrics_shown if m in wide.columns]]
    wide["runs"] = part.groupby("method")["runs"].max()
    return wide


def inside_spread(spread: pd.DataFrame, a: str, b: str, metric: str = "auc",
                  segment: str = "all") -> bool:
    """Whether b's mean minus a's lies within the two methods' seed spread (the larger std):
    a difference the seeds alone could make."""
    part = spread[(spread["segment"] == segment) & (spread["metric"] == metric)].set_index(
        "method")
    if a not in part.index or b not in part.index:
        return True
    gap = abs(part.loc[b, "mean"] - part.loc[a, "mean"])
    noise = np.nanmax([part.loc[a, "std"], part.loc[b, "std"]])
    return bool(np.isnan(noise) or gap <= noise)
