"""Duet home: pick a run, see its data and every model's metrics. Reads the store only."""

from __future__ import annotations

import streamlit as st

from engine.formatting import LOW_HELP, LOW_MARK, METRIC_NAMES, duration, stage_table
from ui import export
from ui.common import cached_runs, page_header, plain, require_run, runs_dir
from ui.compare import run_report_sections
from ui.demo_run import demo_progress_banner, demo_run_panel, running_demo
from ui.glossary import TERMS
from ui.tables import (
    METRIC_COLUMNS,
    dataset_summary,
    metrics_table,
    same_sample_metrics,
    seed_table,
    segment_table,
)

page_header("Duet", ":material/join:", "A conventional recommender and a language model, side "
            "by side: what each method buys, where, and at what cost.")

runs = cached_runs(str(runs_dir()))
if runs.empty:
    st.info(f"No runs in {plain(runs_dir())} yet. Make one from a shell with "
            "`python -m engine run --dataset ml-100k --profile demo`, or start it here.")
    demo_run_panel(runs_dir())
    st.stop()

if running_demo(runs_dir()) is not None:  # `make app`'s demo chain, or the button's
    demo_progress_banner(runs_dir())
reader = require_run()  # damaged runs: flagged in the sidebar, and a message if chosen
info = reader.run_info()
st.subheader(f"Run {plain(info['run_id'])}")
st.write(f"**{plain(info['dataset'])}** · profile **{plain(info['profile'])}** · "
         f"seed {info['seed']} · created {info['created']:%Y-%m-%d %H:%M} UTC · took "
         f"{duration(info['total_seconds'])}")
for note in reader.notes()["message"]:
    st.warning(plain(note), icon=":material/info:")

st.markdown("#### Data")
figures_row = dataset_summary(reader.summary())
for start in range(0, len(figures_row), 6):
    for column, (label, value, help_text) in zip(st.columns(6), figures_row[start:start + 6]):
        column.metric(label, value, help=help_text)

st.markdown("#### Metrics")
split = st.radio("Split", ["test", "valid"], horizontal=True, key="home_split")
headline = metrics_table(reader, split)
st.dataframe(headline, hide_index=True, key="home_metrics", column_config=METRIC_COLUMNS)
if headline["Note"].str.len().gt(0).any():
    st.caption(f"n/a: the metric is undefined on these samples. {LOW_HELP}")
export.table_csv(headline, f"{info['run_id']}-{split}-metrics")
st.caption(f"Every row is on the same {same_sample_metrics(reader, split)[1]:,} {split} samples: "
           "those all methods scored (the LLM methods score a seeded subset of the split, the "
           "LLM being the costly part; the CRMs score all of it). The Compare page picks "
           "methods, adds CRM-entropy buckets, costs and head-to-head wins. Every name and "
           "term is in the sidebar's Glossary.")

over_seeds = seed_table(reader, split)
if over_seeds is not None:
    st.markdown(f"#### Over {int(over_seeds['runs'].max())} seeds")
    st.dataframe(over_seeds, hide_index=True, key="home_seeds")
    st.caption("Mean ± standard deviation over the runs of this run's --seeds group, each on "
               "the samples all its methods scored. The Compare page flags gaps inside it.")

st.markdown("#### Per segment")
metric = st.selectbox("Metric", list(METRIC_NAMES), key="home_metric",
                      format_func=METRIC_NAMES.get)
segments = segment_table(reader, split, metric)
st.dataframe(segments, hide_index=True, key="home_segments")
if segments.map(lambda v: LOW_MARK in str(v) or "n/a" in str(v)).to_numpy().any():
    st.caption(f"{LOW_HELP}; n/a: undefined (one label class or no user with both).")
export.table_csv(segments, f"{info['run_id']}-{split}-{metric}-segments")
st.caption(f"Cold-start user: {TERMS['Cold-start user']}. Long-tail item: "
           f"{TERMS['Long-tail item']}.")

figures = st.session_state.get(export.REPORT_KEY, {})
st.download_button(
    "Download the run report (HTML)", key="home_report", on_click="ignore",
    icon=":material/description:", file_name=f"duet-{info['run_id']}.html", mime="text/html",
    data=lambda: export.report_html(info["run_id"], headline, figures,
                                    run_report_sections(reader, split)).encode(),
    help=f"The headline table, a section per method with its variants per segment and the "
         f"quality-vs-cost front, and the {len(figures)} charts you have opened in this "
         "session (open the router lab or the maps first to include theirs).")

with st.expander("Stage timings"):
    st.dataframe(stage_table(reader.stages()), hide_index=True, key="home_stages")
with st.expander("Run configuration and versions"):
    st.json({"config": info["config"], "versions": info["versions"]}, expanded=False)
