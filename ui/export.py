"""Chart and table export: every chart downloads as PNG, SVG (plotly + kaleido, which drives
a headless Chromium) and self-contained HTML; tables as CSV; one HTML report per run.

Images are rendered only when a button is clicked (Streamlit calls the data callable then),
so drawing a page costs nothing extra.
"""

from __future__ import annotations

import atexit
import html
import os
import shutil
import threading
import warnings
from collections.abc import Callable
from typing import TypeVar

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import streamlit as st

T = TypeVar("T")
REPORT_KEY = "export_figures"  # session: chart key -> (title, figure) for the report
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser",
                       "/usr/bin/google-chrome")


def browser_path() -> str | None:
    """The Chromium kaleido will drive (BROWSER_PATH wins), or None when there is none."""
    if os.environ.get("BROWSER_PATH"):
        return os.environ["BROWSER_PATH"]
    for path in CHROMIUM_CANDIDATES:
        if os.path.exists(path):
            return path
    found = shutil.which("chromium")
    return found


def figure_bytes(fig: go.Figure, fmt: str) -> bytes:
    """PNG/SVG via kaleido (needs Chromium), HTML with plotly.js inlined (needs nothing)."""
    if fmt == "html":
        return fig.to_html(include_plotlyjs=True, full_html=True).encode()
    path = browser_path()
    if path is None:
        raise RuntimeError("PNG/SVG export needs Chromium: apt-get install chromium")
    os.environ.setdefault("BROWSER_PATH", path)
    start_image_server()
    with warnings.catch_warnings():  # plotly warns that a server ignores per-call kopts
        warnings.filterwarnings("ignore", message="The kopts argument is ignored")
        return fig.to_image(format=fmt, scale=2 if fmt == "png" else 1)


_server_lock = threading.Lock()


def start_image_server() -> bool:
    """Keep one kaleido Chromium for the process: the first export pays its start (~3 s),
    later ones take ~0.25 s instead of ~3 s each (measured here for a histogram). Returns
    whether the server runs; when it cannot start, each export starts its own browser."""
    import kaleido

    with _server_lock:
        if not kaleido._global_server.is_running():  # no public "is running" in kaleido 1.x
            try:
                kaleido.start_sync_server(silence_warnings=True)
                atexit.register(kaleido.stop_sync_server, silence_warnings=True)
            except Exception:  # noqa: BLE001 - fall back to one browser per export
                return False
        return kaleido._global_server.is_running()


def _lazy(fig: go.Figure, fmt: str) -> Callable[[], bytes]:
    return lambda: figure_bytes(fig, fmt)


def chart(fig: go.Figure, key: str, container=st, title: str | None = None):
    """Draw a chart with its export buttons; remember it for the run report."""
    event = container.plotly_chart(fig, key=key)
    export_buttons(fig, key, container)
    remember(key, title or _title(fig) or key, fig)
    return event


@st.cache_resource(max_entries=512, show_spinner=False)
def _built(parts: tuple, _build: Callable[[], T]) -> T:
    return _build()


def built(parts: tuple, build: Callable[[], T]) -> T:
    """The figure `build()` makes, built once per `parts` for every session. `parts` names the
    chart, the run file version (run id, mtime) and every widget value that shapes it: plotly
    takes 30-90 ms to build and validate one figure, which every rerun paid for every chart
    on the page (bench/interaction_latency.py). Nobody mutates a figure after it is built
    (drawing, exporting and the report only read it), so sessions may share it. A figure's
    dict (for figures.marked) is kept the same way."""
    return _built(parts, build)


def chart_once(build: Callable[[], go.Figure], key: str, parts: tuple, container=st,
               title: str | None = None):
    """`chart` of the figure `build()` makes, built once per (key, parts): see `built`."""
    return chart(built((key, *parts), build), key, container, title)


def export_buttons(fig: go.Figure, key: str, container=st) -> None:
    images = browser_path() is not None
    with container.popover("Export chart", icon=":material/download:"):
        for fmt, mime in (("png", "image/png"), ("svg", "image/svg+xml"),
                          ("html", "text/html")):
            st.download_button(
                fmt.upper(), data=_lazy(fig, fmt), file_name=f"{key}.{fmt}", mime=mime,
                key=f"{key}_export_{fmt}", on_click="ignore",
                disabled=fmt != "html" and not images,
                help=None if fmt == "html" or images else "needs Chromium (apt-get install "
                "chromium)")


def table_csv(frame: pd.DataFrame, key: str, container=st, label: str = "CSV") -> None:
    container.download_button(label, data=lambda: frame.to_csv(index=False).encode(),
                              file_name=f"{key}.csv", mime="text/csv", key=f"{key}_csv",
                              on_click="ignore", icon=":material/table:")


def remember(key: str, title: str, fig: go.Figure) -> None:
    """Keep the figure itself (serialised only if a report is downloaded): a JSON copy per
    chart on every rerun cost a slider step ~5-20 ms per chart."""
    st.session_state.setdefault(REPORT_KEY, {})[key] = (title, fig)


def _title(fig: go.Figure) -> str:
    text = fig.layout.title.text if fig.layout.title else None
    return text or ""


def report_html(run_id: str, headline: pd.DataFrame,
                figures: dict[str, tuple[str, go.Figure | str]],
                sections: dict[str, tuple[str, go.Figure]] | None = None) -> str:
    """One self-contained HTML file: the headline table, the sections built from the store
    (the methods side by side, one per method), then every chart remembered this session."""
    parts = [f"<h1>Duet run {html.escape(run_id)}</h1>", "<h2>Headline</h2>",
             headline.to_html(index=False, float_format=lambda v: f"{v:.4f}", border=0)]
    first = True
    for key, (title, item) in {**(sections or {}), **figures}.items():
        fig = pio.from_json(item) if isinstance(item, str) else item
        parts.append(f"<h2>{html.escape(title)}</h2>")
        parts.append(fig.to_html(full_html=False, include_plotlyjs=first, div_id=key))
        first = False
    style = ("body{font-family:sans-serif;margin:2em;max-width:1200px}"
             "table{border-collapse:collapse}td,th{padding:4px 10px;border-bottom:1px solid #ddd}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Duet {html.escape(run_id)}"
            f"</title><style>{style}</style></head><body>{''.join(parts)}</body></html>")


SEGMENTS = ["all", "cold_user", "warm_user", "long_tail_item", "head_item"]


def variants_panel(rows: pd.DataFrame, figure: Callable[[pd.DataFrame, list[str]], go.Figure],
                   key: str, method: str, caption: str, parts: tuple = ()) -> None:
    """A hybrid's variants per segment: the grouped bars (built once per `parts`, the run
    file version, when given), the table (n per segment, ⚠ where few) with its CSV, and
    what each variant is."""
    from engine.formatting import LOW_HELP, metric_cells

    if parts:
        chart_once(lambda: figure(rows, SEGMENTS), key, (method, *parts))
    else:
        chart(figure(rows, SEGMENTS), key)
    table = metric_cells(rows, "variant", "segment", "test").reindex(
        columns=[s for s in SEGMENTS if s in set(rows["segment"])])
    sizes = rows.groupby("segment")["n"].max()
    table.columns = [f"{c} (n={sizes[c]:,})" for c in table.columns]
    st.dataframe(table.reset_index(), hide_index=True, key=f"{key}_table")
    table_csv(table.reset_index(), f"{method}-variants")
    st.caption(f"{caption} {LOW_HELP}.")
