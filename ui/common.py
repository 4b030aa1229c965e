"""What every page needs: where the runs are, which run is chosen, a cached reader."""

from __future__ import annotations

import atexit
import os
from pathlib import Path

import pandas as pd
import streamlit as st

from engine.store import RunReader, list_runs, open_run

RUN_KEY = "duet_run_id"  # shared across pages: the chosen run


def runs_dir() -> Path:
    return Path(os.environ.get("DUET_RUNS_DIR", "runs"))


@st.cache_data(ttl=5, show_spinner=False)
def cached_runs(directory: str) -> pd.DataFrame:
    return list_runs(directory)


@st.cache_resource(show_spinner=False)
def cached_reader(directory: str, run_id: str, mtime: float) -> RunReader:
    """One read-only connection per run file version (mtime changes if a run is replaced)."""
    del mtime
    reader = open_run(directory, run_id)
    atexit.register(reader.close)  # a clean close at shutdown, not a leaked connection
    return reader


def reader_for(run_id: str) -> RunReader:
    directory = runs_dir()
    path = directory / f"{run_id}.duckdb"
    return cached_reader(str(directory), run_id, path.stat().st_mtime)


def choose_run(runs: pd.DataFrame) -> str:
    """Sidebar selector; the choice is kept in session state for every page."""
    ok = runs[runs["error"] == ""]
    ids = ok["run_id"].tolist()
    current = st.session_state.get(RUN_KEY)
    if current not in ids:
        current = st.query_params.get("run", ids[0])
        if current not in ids:
            current = ids[0]
    labels = {r.run_id: f"{r.run_id}" for r in ok.itertuples()}
    choice = st.sidebar.selectbox("Run", ids, index=ids.index(current),
                                  format_func=labels.get, key="sidebar_run")
    st.session_state[RUN_KEY] = choice
    return choice


def require_run() -> RunReader:
    """For pages other than home: the chosen run's reader, or a pointer to make one."""
    runs = cached_runs(str(runs_dir()))
    if runs.empty or (runs["error"] != "").all():
        st.info("No runs yet. Open the home page to start the demo run, or run "
                "`python -m engine run --profile demo`.")
        st.stop()
    return reader_for(choose_run(runs))


def page_header(title: str, icon: str, caption: str) -> None:
    """Every page's config, title and one-line purpose."""
    st.set_page_config(page_title=f"{title} · Duet", page_icon=icon, layout="wide")
    st.title(title)
    st.caption(caption)


def require_table(reader: RunReader, table: str, message: str) -> None:
    """Stop the page with `message` when the run lacks `table` (e.g. no routed method)."""
    if not reader.has_table(table):
        st.info(message)
        st.stop()
