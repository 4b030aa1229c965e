"""Tables the pages show, shaped from the store's frames (pure functions, easy to test)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from engine.store import RunReader

SUMMARY_ROWS = [
    ("interactions", "Ratings", "{:,.0f}"), ("users", "Users", "{:,.0f}"),
    ("items", "Items", "{:,.0f}"), ("density", "Density", "{:.2%}"),
    ("click_rate", "Click rate", "{:.1%}"), ("samples", "Samples", "{:,.0f}"),
    ("train_samples", "Train", "{:,.0f}"), ("valid_samples", "Valid", "{:,.0f}"),
    ("test_samples", "Test", "{:,.0f}"),
    ("cold_user_test_share", "Cold-start users in test", "{:.1%}"),
    ("long_tail_test_share", "Long-tail items in test", "{:.1%}"),
]


METRIC_COLUMNS = {
    name: st.column_config.NumberColumn(name, format="%.4f")
    for name in ("AUC", "LogLoss", "ACC", "UAUC")
} | {
    "Train s": st.column_config.NumberColumn("Train s", format="%.1f",
                                             help="training wall time of the method"),
    "ms / 1k samples": st.column_config.NumberColumn(
        "ms / 1k samples", format="%.1f", help="measured inference time per 1,000 samples"),
    "LLM calls / 1k": st.column_config.NumberColumn(
        "LLM calls / 1k", format="%.0f", help="samples per 1,000 that the LLM scores"),
}


def dataset_summary(summary: dict[str, float]) -> pd.DataFrame:
    rows = [(label, fmt.format(summary[key])) for key, label, fmt in SUMMARY_ROWS
            if key in summary]
    return pd.DataFrame(rows, columns=["", "value"])


def metrics_table(reader: RunReader, split: str = "test") -> pd.DataFrame:
    table = reader.metrics_table(split, "all")
    if table.empty:
        return table
    columns = ["method", "kind", "auc", "logloss", "acc", "uauc", "n", "train_seconds",
               "infer_ms_per_1k", "llm_calls_per_1k"]
    table = table[[c for c in columns if c in table.columns]]
    return table.rename(columns={
        "method": "Method", "kind": "Kind", "auc": "AUC", "logloss": "LogLoss", "acc": "ACC",
        "uauc": "UAUC", "n": "Samples", "train_seconds": "Train s",
        "infer_ms_per_1k": "ms / 1k samples", "llm_calls_per_1k": "LLM calls / 1k"}
    ).sort_values("AUC", ascending=False).round(4)


def segment_table(reader: RunReader, split: str, metric: str) -> pd.DataFrame:
    long = reader.metrics(split)
    long = long[long["metric"] == metric]
    if long.empty:
        return pd.DataFrame()
    wide = long.pivot(index="method", columns="segment", values="value").round(4)
    sizes = long.groupby("segment")["n"].max()
    wide.columns = [f"{seg} (n={sizes[seg]:,})" for seg in wide.columns]
    return wide.reset_index().rename(columns={"method": "Method"})
