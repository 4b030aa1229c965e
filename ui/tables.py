"""Tables the pages show, shaped from the store's frames (pure functions, easy to test)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from engine.formatting import LOW_HELP, METRIC_NAMES, metric_cells
from engine.metrics import metric_caveat
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
    name: st.column_config.TextColumn(name, help=f"{name} on the split's scored samples; "
                                      f"{LOW_HELP}")
    for name in METRIC_NAMES.values()
} | {
    "Samples": st.column_config.NumberColumn("Samples", format="%d",
                                             help="samples the method scored on this split"),
    "Note": st.column_config.TextColumn("Note", help="why a metric is missing or shaky"),
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
    """One row per method: the metrics as display text ("n/a (one class in test)" where
    undefined, a mark where shaky), samples, a note, and the cost columns; best AUC first."""
    long = reader.metrics(split, "all")
    if long.empty:
        return pd.DataFrame()
    cells = metric_cells(long, "method", "metric", split).reindex(
        columns=list(METRIC_NAMES), fill_value="n/a")
    cells.columns = list(METRIC_NAMES.values())
    counts = long.groupby("method")[["n", "n_pos"]].max()
    auc = long[long["metric"] == "auc"].set_index("method")["value"].reindex(cells.index)
    notes = [metric_caveat("auc", auc[m], counts.loc[m, "n"], counts.loc[m, "n_pos"], split)
             for m in cells.index]
    cost = reader.methods().set_index("method").reindex(cells.index)
    table = pd.DataFrame({"Method": cells.index, "Kind": cost["kind"].to_numpy()})
    for name in METRIC_NAMES.values():
        table[name] = cells[name].to_numpy()
    table["Samples"] = counts["n"].to_numpy()
    table["Note"] = notes
    table["Train s"] = cost["train_seconds"].to_numpy()
    table["ms / 1k samples"] = cost["infer_ms_per_1k"].to_numpy()
    table["LLM calls / 1k"] = cost["llm_calls_per_1k"].to_numpy()
    order = np.argsort(-auc.fillna(-np.inf).to_numpy(), kind="stable")
    return table.iloc[order].reset_index(drop=True)


def segment_table(reader: RunReader, split: str, metric: str) -> pd.DataFrame:
    """Methods x segments of one metric, as display text; each column names its size."""
    long = reader.metrics(split)
    long = long[long["metric"] == metric]
    if long.empty:
        return pd.DataFrame()
    wide = metric_cells(long, "method", "segment", split)
    sizes = long.groupby("segment")["n"].max()
    wide.columns = [f"{seg} (n={sizes[seg]:,})" for seg in wide.columns]
    return wide.reset_index().rename(columns={"method": "Method"})
