"""Chart export (PNG/SVG through kaleido + Chromium, HTML), CSV and the run report."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import pytest

from ui import export


@pytest.fixture
def fig():
    return go.Figure(go.Bar(x=["CRM", "LLM"], y=[0.7663, 0.5362]),
                     layout={"title": {"text": "AUC by model"}})


def test_html_is_self_contained(fig):
    page = export.figure_bytes(fig, "html").decode()
    assert page.lower().startswith("<!doctype html>") and "AUC by model" in page
    assert "plotly.js" in page.lower() or "Plotly.newPlot" in page
    assert 'src="https://cdn.plot.ly' not in page  # plotly.js inlined: works offline


@pytest.mark.skipif(export.browser_path() is None, reason="needs Debian's chromium")
@pytest.mark.parametrize("fmt, magic", [("png", b"\x89PNG\r\n\x1a\n"), ("svg", b"<svg")])
def test_images_through_kaleido(fig, fmt, magic):
    data = export.figure_bytes(fig, fmt)
    assert data.startswith(magic) and len(data) > 1000


@pytest.mark.skipif(export.browser_path() is None, reason="needs Debian's chromium")
def test_exports_share_one_browser_and_png_is_double_scale(fig):
    import struct

    import kaleido

    fig = go.Figure(fig).update_layout(width=400, height=300)
    export.figure_bytes(fig, "svg")
    assert export.start_image_server() and kaleido._global_server.is_running()
    png = export.figure_bytes(fig, "png")
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk
    assert (width, height) == (800, 600)  # scale 2 survives the persistent server


def test_report_has_the_table_and_each_chart_once(fig):
    headline = pd.DataFrame({"Method": ["dcnv2", "corella"], "AUC": [0.7663, 0.7574]})
    other = go.Figure(go.Scatter(x=[0, 1], y=[1, 0]))
    report = export.report_html("run-1", headline, {"a": ("AUC by model", fig.to_json()),
                                                    "b": ("Curve", other.to_json())})
    assert "<h1>Duet run run-1</h1>" in report
    assert "<td>dcnv2</td>" in report and "0.7574" in report
    assert report.count("<h2>") == 3 and 'id="a"' in report and 'id="b"' in report
    assert report.count("Plotly.newPlot") == 2


def test_router_page_offers_every_export(monkeypatch, tmp_path):
    from tests.app.pages import open_page
    from tests.app.test_router_lab import write_store

    write_store(tmp_path)
    at = open_page(monkeypatch, tmp_path, "pages/2_Router_lab.py")
    keys = {b.key for b in at.get("download_button")}
    for chart in ("router_hist", "router_curve", "router_buckets", "router_reliability"):
        assert {f"{chart}_export_{f}" for f in ("png", "svg", "html")} <= keys
    remembered = at.session_state[export.REPORT_KEY]
    assert set(remembered) == {"router_hist", "router_curve", "router_buckets",
                               "router_reliability"}
