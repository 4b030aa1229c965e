"""What every page needs: where the runs are, which run is chosen, a cached reader, the one
guard that turns a damaged or vanished run into a message instead of a traceback, and `plain`
for showing data text in elements that render markdown."""

from __future__ import annotations

import atexit
import os
import re
from pathlib import Path

import pandas as pd
import streamlit as st
from streamlit.errors import StreamlitAPIException

from engine.errors import StoreError
from engine.store import SUFFIX, RunReader, list_runs, open_run
from ui.glossary import glossary_table

RUN_KEY = "duet_run_id"  # shared across pages: the chosen run
PAGES_DIR = Path(__file__).resolve().parent.parent / "pages"
# What makes markdown (and Streamlit's extensions of it) out of text: links and images ([ ] !),
# autolinks and HTML (< >), emphasis and code (* _ ` ~), headings and tables (# |), LaTeX ($),
# directives and emoji (: { }), entities (&), and the escape character itself.
MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>#!|~$:&{}])")


def plain(text: object) -> str:
    """`text` escaped so that st.markdown, st.caption, st.info, titles and widget labels show
    it as typed: data text (titles, ids, attributes, LLM answers, errors) never becomes a
    link, an image, HTML or formatting."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", str(text))


def decimals(*columns: str, fmt: str = "%.4f") -> dict:
    """A dataframe column_config showing these columns with fixed decimals."""
    return {c: st.column_config.NumberColumn(format=fmt) for c in columns}


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


@st.cache_data(show_spinner="Checking the run…", max_entries=32)
def damage_of(path: str, mtime: float, size: int) -> str:
    """Why a run file cannot be read in full ("" when every value reads back); once per file
    version, as reading every value costs a scan of the run."""
    del mtime, size
    try:
        with RunReader(path) as reader:
            reader.verify()
    except StoreError as exc:
        return str(exc)
    return ""


def reader_for(run_id: str) -> RunReader:
    """The run's reader once the whole file reads back; otherwise the page stops with
    "this run is damaged: <reason>" (or that the file is gone)."""
    directory = runs_dir()
    path = directory / f"{run_id}{SUFFIX}"
    try:
        stat = path.stat()
        damage = damage_of(str(path), stat.st_mtime, stat.st_size)
        if damage:
            raise StoreError(damage)
        return cached_reader(str(directory), run_id, stat.st_mtime)
    except OSError as exc:
        problem = f"run {run_id} cannot be read: {exc.strerror or exc}"
    except StoreError as exc:
        problem = str(exc)
    st.error(plain(problem), icon=":material/broken_image:")
    st.stop()


def show_damaged(runs: pd.DataFrame) -> None:
    """Every damaged run of the folder, in the sidebar of every page."""
    for error in runs.loc[runs["error"] != "", "error"]:
        st.sidebar.warning(plain(error), icon=":material/broken_image:")


def choose_run(runs: pd.DataFrame) -> str:
    """Sidebar selector over the readable runs; the choice is kept in session state for every
    page. A run file renamed on disk is noted under it."""
    ok = runs[runs["error"] == ""]
    ids = ok["run_id"].tolist()
    current = st.session_state.get(RUN_KEY)
    if current not in ids:
        current = st.query_params.get("run", ids[0])
        if current not in ids:
            current = ids[0]
    choice = st.sidebar.selectbox("Run", ids, index=ids.index(current), key="sidebar_run")
    st.session_state[RUN_KEY] = choice
    note = dict(zip(ok["run_id"], ok["note"].fillna(""))).get(choice)
    if note:
        st.sidebar.caption(plain(note))
    return choice


def require_run() -> RunReader:
    """For every page: the chosen run's checked reader, or a message that stops the page."""
    runs = cached_runs(str(runs_dir()))
    show_damaged(runs)
    if runs.empty:
        st.info("No runs yet. Open the home page to start the demo run, or run "
                "`python -m engine run --profile demo`.")
        st.stop()
    if (runs["error"] != "").all():
        st.info("No readable run: every run here is damaged (see the sidebar). Make a new one "
                "with `python -m engine run --profile demo`.")
        st.stop()
    reader = reader_for(choose_run(runs))
    sidebar_glossary(reader)
    return reader


def page_header(title: str, icon: str, caption: str) -> None:
    """Every page's config, the sidebar's page links, its title and one-line purpose."""
    st.set_page_config(page_title=f"{title} · Duet", page_icon=icon, layout="wide")
    navigation()
    st.title(title)
    st.caption(caption)


def page_links() -> list[tuple[str, str]]:
    """(script, label) of every page: Home (app.py), then pages/ in file order, labelled from
    the file name ("2_Router_lab.py" -> "Router lab")."""
    links = [("app.py", "Home")]
    for path in sorted(PAGES_DIR.glob("*.py")):
        links.append((f"pages/{path.name}", re.sub(r"^\d+_", "", path.stem).replace("_", " ")))
    return links


def navigation() -> None:
    """The sidebar's page list (Streamlit's own would call the home page "app")."""
    try:
        for script, label in page_links():
            st.sidebar.page_link(script, label=label)
    except StreamlitAPIException:
        # a page run as the main script by itself (AppTest) has no app around it to link to
        return
    st.sidebar.divider()


def page_link(script: str, label: str, icon: str | None = None) -> None:
    """A link to another page; nothing when the page runs by itself (AppTest), where no app
    around it knows the other pages."""
    try:
        st.page_link(script, label=label, icon=icon)
    except StreamlitAPIException:
        return


def sidebar_glossary(reader: RunReader) -> None:
    """Every term and every stored variant of the run, one line each, on every page."""
    with st.sidebar.expander("Glossary", icon=":material/menu_book:"):
        st.markdown(_glossary_text(str(reader.path), reader.path.stat().st_mtime, reader))


@st.cache_data(show_spinner=False, max_entries=16)
def _glossary_text(path: str, mtime: float, _reader: RunReader) -> str:
    """The glossary as one markdown element, not one per term: a demo run has ~40 terms, each
    an element every page run sent and the browser laid out again."""
    return "\n\n".join(f"**{plain(term)}**: {plain(meaning)}" for term, meaning
                         in glossary_table(_reader.methods()).itertuples(index=False))


def require_table(reader: RunReader, table: str, message: str) -> None:
    """Stop the page with `message` when the run lacks `table` (e.g. no routed method)."""
    if not reader.has_table(table):
        st.info(message)
        st.stop()
