"""Tables the pages show, shaped from the store's frames (pure functions, easy to test).

Every value leaves here as display text from engine.formatting (the CLI and the report use
the same), so no page shows "None", a raw float or a count with decimals.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from engine import compare
from engine import formatting as fmt
from engine.formatting import LOW_HELP, METRIC_NAMES, metric_cells
from engine.metrics import metric_caveat
from engine.store import RunReader
from ui.common import runs_dir
from ui.glossary import TERMS, describe_methods

# (summary key, label, formatter, help)
SUMMARY_FIELDS = [
    ("interactions", "Ratings", fmt.count, "ratings after exact duplicates were dropped"),
    ("users", "Users", fmt.count, None),
    ("items", "Items", fmt.count, None),
    ("items_with_text_share", "Items with text", fmt.share,
     "items with a title or text; the others reach the LLM and the maps as bare ids"),
    ("click_rate", "Click rate", fmt.share, TERMS["Click"]),
    ("samples", "Samples", fmt.count,
     "ratings with enough earlier history to be a sample (train + valid + test)"),
    ("train_samples", "Train", fmt.count, None),
    ("valid_samples", "Valid", fmt.count, None),
    ("test_samples", "Test", fmt.count, None),
    ("cold_user_test_share", "Cold-start in test", fmt.share, TERMS["Cold-start user"]),
    ("long_tail_test_share", "Long-tail in test", fmt.share, TERMS["Long-tail item"]),
]

COST_COLUMNS = ["Train time", "Inference / 1k", "LLM calls / 1k"]
METRIC_COLUMNS = {
    name: st.column_config.TextColumn(name, help=f"{TERMS[name]}. {LOW_HELP}")
    for name in METRIC_NAMES.values()
} | {
    "Method": st.column_config.TextColumn("Method", help="the stored variant; hover 'What it "
                                          "is', or see the Glossary in the sidebar"),
    "Kind": st.column_config.TextColumn("Kind", help="crm: no LLM; llm: the LLM alone; "
                                        "hybrid: both"),
    "Samples": st.column_config.TextColumn("Samples", help=TERMS["Samples"]),
    "Note": st.column_config.TextColumn("Note", help="why a metric is missing or shaky"),
    "Train time": st.column_config.TextColumn("Train time",
                                              help="training wall time of the method"),
    "Inference / 1k": st.column_config.TextColumn("Inference / 1k",
                                                  help=TERMS["Inference cost"]),
    "LLM calls / 1k": st.column_config.TextColumn(
        "LLM calls / 1k", help="samples per 1,000 that the LLM scores"),
    "What it is": st.column_config.TextColumn("What it is", width="large"),
}


def dataset_summary(summary: dict[str, float]) -> list[tuple[str, str, str | None]]:
    """(label, value text, help) for every summary figure the run has."""
    return [(label, format_value(summary[key]), help_text)
            for key, label, format_value, help_text in SUMMARY_FIELDS if key in summary]


@st.cache_data(show_spinner="Scoring every method on the samples all of them scored…",
               max_entries=8)
def _same_samples(run_id: str, mtime: float, split: str, _reader: RunReader
                  ) -> tuple[pd.DataFrame, int]:
    return compare.run_metrics(_reader, split)


def same_sample_metrics(reader: RunReader, split: str) -> tuple[pd.DataFrame, int]:
    """Every method's metrics on the samples all methods scored in `split` (long frame, as
    RunReader.metrics) and their count; cached per run file."""
    return _same_samples(reader.run_id, reader.path.stat().st_mtime, split, reader)


@st.cache_data(show_spinner="Reading the other seeds' runs…", max_entries=8)
def _seed_spread(run_id: str, mtime: float, split: str, methods: tuple[str, ...] | None,
                 _reader: RunReader) -> tuple[list[str], pd.DataFrame | None]:
    runs = compare.group_runs(runs_dir(), _reader)
    if len(runs) < 2:
        return runs, None
    return runs, compare.seed_spread(runs_dir(), runs, split,
                                     list(methods) if methods else None)


def seed_spread(reader: RunReader, split: str, methods: tuple[str, ...] | None = None
                ) -> tuple[list[str], pd.DataFrame | None]:
    """The run's --seeds group (run ids) and compare.seed_spread over it (None for a single
    run); cached per run file, for the home and Compare pages."""
    return _seed_spread(reader.run_id, reader.path.stat().st_mtime, split, methods, reader)


def seed_table(reader: RunReader, split: str) -> pd.DataFrame | None:
    """method x metric "mean ± std" over the run's --seeds group; None for a single run."""
    _, spread = seed_spread(reader, split)
    return None if spread is None else compare.spread_text(spread).reset_index()


def metrics_table(reader: RunReader, split: str = "test") -> pd.DataFrame:
    """One row per method on the samples every method scored, every cell display text: the
    metrics ("n/a (one class in test)" where undefined, a mark where shaky), samples, a note,
    the costs with units and what the method is; best AUC first."""
    long, _ = same_sample_metrics(reader, split)
    long = long[long["segment"] == "all"]
    if long.empty:
        return pd.DataFrame()
    cells = metric_cells(long, "method", "metric", split).reindex(
        columns=list(METRIC_NAMES), fill_value=fmt.NA)
    cells.columns = list(METRIC_NAMES.values())
    counts = long.groupby("method")[["n", "n_pos"]].max().reindex(cells.index)
    auc = long[long["metric"] == "auc"].set_index("method")["value"].reindex(cells.index)
    methods = reader.methods()
    cost = methods.set_index("method").reindex(cells.index)
    what = describe_methods(methods)
    table = pd.DataFrame({"Method": cells.index, "Kind": cost["kind"].fillna("").to_numpy()})
    for name in METRIC_NAMES.values():
        table[name] = cells[name].to_numpy()
    table["Samples"] = [fmt.count(n) for n in counts["n"]]
    table["Note"] = [metric_caveat("auc", auc[m], counts.loc[m, "n"], counts.loc[m, "n_pos"],
                                   split) for m in cells.index]
    table["Train time"] = [fmt.duration(v, "not recorded") for v in cost["train_seconds"]]
    table["Inference / 1k"] = [fmt.duration_ms(v, "not recorded")
                               for v in cost["infer_ms_per_1k"]]
    table["LLM calls / 1k"] = [fmt.count(v) for v in cost["llm_calls_per_1k"]]
    table["What it is"] = [what.get(m, "") for m in cells.index]
    order = np.argsort(-auc.fillna(-np.inf).to_numpy(), kind="stable")
    return table.iloc[order].reset_index(drop=True)


def segment_table(reader: RunReader, split: str, metric: str) -> pd.DataFrame:
    """Methods x segments of one metric on the samples every method scored, as display text;
    each column names its size."""
    long, _ = same_sample_metrics(reader, split)
    long = long[long["metric"] == metric]
    if long.empty:
        return pd.DataFrame()
    wide = metric_cells(long, "method", "segment", split)
    sizes = long.groupby("segment")["n"].max()
    wide.columns = [f"{seg} (n={sizes[seg]:,})" for seg in wide.columns]
    return wide.reset_index().rename(columns={"method": "Method"})
