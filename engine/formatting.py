"""How numbers read in every table: the CLI's, the app's and the report's.

Pure functions over values and pandas frames (no Streamlit), so the engine's CLI, the app and
the HTML report show the same text: metrics with 4 decimals, counts with thousands separators,
shares as percentages, durations in the unit that reads best (ms, s, min, h), a missing value
as "n/a" plus the reason where known, a metric on too few samples marked as low-confidence.
"""

from __future__ import annotations

import pandas as pd

from engine.metrics import metric_caveat

METRIC_NAMES = {"auc": "AUC", "logloss": "LogLoss", "ece": "ECE", "acc": "ACC",
                "uauc": "UAUC"}
LOW_MARK = "⚠"  # after a value computed on too few samples or too few of one class
LOW_HELP = f"{LOW_MARK}: fewer than 100 samples, or fewer than 10 clicks or non-clicks"
NA = "n/a"


def missing(value: object) -> bool:
    """None, NaN or NA (a list or other container is not missing)."""
    try:
        return value is None or bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def na(reason: str = "") -> str:
    return f"{NA} ({reason})" if reason else NA


def count(value: object, reason: str = "") -> str:
    """12,345 (a whole number; n/a when missing)."""
    return na(reason) if missing(value) else f"{round(float(value)):,}"


def share(value: object, reason: str = "", digits: int = 1) -> str:
    """0.551 -> '55.1%'."""
    return na(reason) if missing(value) else f"{100 * float(value):.{digits}f}%"


def number(value: object, reason: str = "", digits: int = 4) -> str:
    """A quantity with a fixed number of decimals (metrics: 4)."""
    return na(reason) if missing(value) else f"{float(value):.{digits}f}"


def duration(seconds: object, reason: str = "") -> str:
    """Seconds in the unit that reads best: '0.4 ms', '12 ms', '3.2 s', '4 min 12 s',
    '2 h 5 min'."""
    if missing(seconds):
        return na(reason)
    s = float(seconds)
    if s < 0.01:
        return f"{1000 * s:.1f} ms"
    if s < 1:
        return f"{1000 * s:.0f} ms"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        minutes, rest = divmod(round(s), 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, rest = divmod(round(s / 60), 60)
    return f"{hours} h {rest} min" if rest else f"{hours} h"


def duration_ms(ms: object, reason: str = "") -> str:
    """A duration given in milliseconds (the store's latency columns)."""
    return na(reason) if missing(ms) else duration(float(ms) / 1000)


def stage_table(stages: pd.DataFrame) -> pd.DataFrame:
    """The stages table (stage, seconds, detail) with readable durations and a total row;
    a method's sub-stages ("method:x/sub") are indented under it and not added twice."""
    out = stages[["stage", "seconds", "detail"]].copy()
    sub = out["stage"].str.contains("/", regex=False)
    total = pd.DataFrame([{"stage": "total", "seconds": out.loc[~sub, "seconds"].sum(),
                           "detail": ""}])
    out.loc[sub, "stage"] = "  └ " + out.loc[sub, "stage"].str.split("/", n=1).str[1]
    out = pd.concat([out, total], ignore_index=True)
    out["time"] = [duration(v) for v in out.pop("seconds")]
    out["detail"] = out["detail"].fillna("").astype(str)
    return out[["stage", "time", "detail"]]


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
