"""How numbers read in every table: the CLI's, the app's and the report's.

Pure functions over values and pandas frames (no Streamlit), so the engine's CLI and the app
show the same text: metrics with 4 decimals, a missing value as "n/a (reason)", a metric on
too few samples marked as low-confidence.
"""

from __future__ import annotations

import pandas as pd

from engine.metrics import metric_caveat

METRIC_NAMES = {"auc": "AUC", "logloss": "LogLoss", "acc": "ACC", "uauc": "UAUC"}
LOW_MARK = "⚠"  # after a value computed on too few samples or too few of one class
LOW_HELP = f"{LOW_MARK}: fewer than 100 samples, or fewer than 10 clicks or non-clicks"


def metric_text(metric: str, value: float, n: float = float("nan"),
                n_pos: float = float("nan"), split: str = "") -> str:
    """'0.7374', '0.8123 ⚠' (low confidence) or 'n/a (one class in test)'."""
    caveat = metric_caveat(metric, value, n, n_pos, split)
    if pd.isna(value):
        return f"n/a ({caveat})" if caveat != "undefined" else "n/a"
    return f"{value:.4f}" + (f" {LOW_MARK}" if caveat else "")


def metric_cells(long: pd.DataFrame, index: str, columns: str, split: str = "") -> pd.DataFrame:
    """A long metrics frame (metric, value, n, n_pos and the index/columns keys) -> a wide
    frame of display strings; a cell with no row is empty."""
    n_pos = long["n_pos"] if "n_pos" in long else pd.Series(float("nan"), index=long.index)
    text = [metric_text(m, v, n, p, split) for m, v, n, p in
            zip(long["metric"], long["value"], long["n"], n_pos)]
    frame = long.assign(text=text)
    wide = frame.pivot(index=index, columns=columns, values="text")
    return wide.fillna("")


def metrics_report(long: pd.DataFrame, cost: pd.DataFrame, split: str = "test") -> str:
    """The CLI's metrics text: per method AUC/LogLoss/ACC/UAUC, samples and training cost,
    then AUC per segment with each segment's size; missing and shaky values explained.

    long: method, segment, metric, value, n[, n_pos] rows of one split.
    cost: indexed by method, with train_seconds (and optionally train_samples_per_s).
    """
    overall = long[long["segment"] == "all"]
    table = metric_cells(overall, "method", "metric", split).reindex(
        columns=list(METRIC_NAMES), fill_value="")
    table.columns = list(METRIC_NAMES.values())
    table["samples"] = overall.groupby("method")["n"].max().map("{:,.0f}".format)
    if "train_samples_per_s" in cost:
        table["train samples/s"] = cost["train_samples_per_s"].map(_count)
    if "train_seconds" in cost:
        table["train s"] = cost["train_seconds"].map(_seconds)
    auc = long[long["metric"] == "auc"]
    segments = metric_cells(auc, "method", "segment", split)
    sizes = auc.groupby("segment")["n"].max()
    segments.columns = [f"{seg} (n={sizes[seg]:,})" for seg in segments.columns]
    text = (f"\n{split} metrics\n{table.to_string()}\n\n{split} AUC per segment\n"
            f"{segments.to_string()}")
    marks = any(LOW_MARK in str(v) for v in [*table.to_numpy().ravel(),
                                             *segments.to_numpy().ravel()])
    return text + (f"\n{LOW_HELP}" if marks else "")


def _count(value: float) -> str:
    return "n/a" if value != value else f"{value:,.0f}"


def _seconds(value: float) -> str:
    return "n/a" if value != value else f"{value:,.1f}"
