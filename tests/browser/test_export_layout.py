"""Exported charts look like the on-screen ones: every chart type is rendered to SVG through
the app's own export path (plotly + kaleido + Debian's Chromium), then opened in Chromium,
where every text element (tick labels, axis titles, legend, annotations) must lie inside the
image and no axis title may overlap its tick labels."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from tests.browser.conftest import CHROMIUM

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM) and not os.environ.get("DUET_REQUIRE_BROWSER"),
    reason="needs Debian's chromium (.ci/run installs it)")

MEASURE = """() => {
  const svg = document.querySelector('svg');
  const box = svg.getBoundingClientRect();
  const rect = (e) => { const r = e.getBoundingClientRect();
    return {x0: r.left - box.left, y0: r.top - box.top, x1: r.right - box.left,
            y1: r.bottom - box.top, text: e.textContent, cls: e.getAttribute('class') || '',
            parent: (e.closest('g[class]') || {getAttribute: () => ''}).getAttribute('class')}; };
  const texts = [...document.querySelectorAll('text')].filter(t => t.textContent.trim());
  return {width: box.width, height: box.height, texts: texts.map(rect)};
}"""


def figures() -> dict[str, object]:
    """One figure of every chart type the app draws, from small made-up frames."""
    from engine import routing
    from ui import cases, maps
    from ui import router_charts as charts

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400).astype(float)
    p_crm = np.clip(labels * 0.3 + rng.random(400) * 0.7, 0, 1)
    p_llm = rng.random(400)
    data = routing.RouterData(labels, p_crm, p_llm)
    frame = pd.DataFrame({"entity_id": [str(i) for i in range(60)], "x": rng.normal(size=60),
                          "y": rng.normal(size=60), "title": [f"Item {i}" for i in range(60)],
                          "popularity": rng.integers(1, 500, 60), "genre": "Drama",
                          "genres": "Drama", "CRM vs LLM": "CRM better"})
    history = pd.DataFrame({"time": pd.to_datetime(np.arange(20) * 86400 + 9e8, unit="s"),
                            "rating": rng.integers(1, 6, 20).astype(float),
                            "item": [str(i) for i in range(20)],
                            "title": [f"Movie {i}" for i in range(20)], "kind": "train"})
    return {
        "histogram": charts.entropy_histogram(
            charts.entropy_counts(data.entropy, data.crm_correct), 0.97),
        "line": charts.quality_vs_share(routing.quality_curve(data), 0.2, 0.71, 0.72, 0.55),
        "grouped bars": charts.bucket_bars(routing.bucket_table(data)),
        "reliability": charts.reliability_diagram(routing.reliability(p_crm, labels),
                                                  routing.reliability(p_llm, labels)),
        "map scatter": maps.scatter(frame, "popularity", "semantic (60 items)", {"3", "4"}),
        "agreement histogram": maps.agreement_histogram(pd.Series(rng.random(60)),
                                                        "semantic", "behavioural", 10),
        "timeline": cases.timeline_figure(history, "42"),
    }


def overlaps(a: dict, b: dict) -> bool:
    return a["x0"] < b["x1"] and b["x0"] < a["x1"] and a["y0"] < b["y1"] and b["y0"] < a["y1"]


@pytest.mark.parametrize("name", list(figures()))
def test_exported_chart_keeps_every_label_inside(browser, tmp_path, name):
    from ui.export import figure_bytes

    svg = figure_bytes(figures()[name], "svg").decode()
    page = browser.new_page()
    page.set_content(f"<html><body style='margin:0'>{svg}</body></html>")
    found = page.evaluate(MEASURE)
    page.close()
    assert found["texts"], "no text in the exported chart"
    outside = [t["text"] for t in found["texts"]
               if t["x0"] < -1 or t["y0"] < -1 or t["x1"] > found["width"] + 1
               or t["y1"] > found["height"] + 1]
    assert not outside, f"{name}: cut off at the edge: {outside}"
    for axis in ("y", "x"):
        titles = [t for t in found["texts"] if t["cls"].startswith(f"{axis}title")]
        ticks = [t for t in found["texts"] if t["parent"].startswith(f"{axis}tick")]
        for title in titles:
            hit = [t["text"] for t in ticks if overlaps(title, t)]
            assert not hit, f"{name}: the {axis} axis title overlaps tick labels {hit}"
