"""Time to first render of each page in headless Chromium, and chart export time.

    .venv/bin/python bench/page_render.py --runs runs

Starts `streamlit run app.py` on 127.0.0.1 against --runs (newest run selected), loads each
page in a fresh browser context and times until the page's main content is drawn; then times
PNG and SVG export of the router lab's first chart (kaleido + Chromium). Prints markdown.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from interaction_latency import ARGS, start  # noqa: E402  (one way to start the app)

ROOT = Path(__file__).resolve().parents[1]
PAGES = [("Home", "", '[data-testid="stDataFrame"]'),
         ("Router lab", "Router_lab", '[data-testid="stMetricValue"], [data-testid="stAlert"]'),
         ("Case browser", "Case_browser", '[data-testid="stTextInput"]'),
         ("Embedding maps", "Embedding_maps", '.js-plotly-plot, [data-testid="stAlert"]')]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", default="runs")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    proc, url = start(ROOT, args.runs)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            print("| page | first render s (cold) | again s (warm caches) |")
            print("|---|---:|---:|")
            for name, path, ready in PAGES:
                times = []
                for _ in range(2):
                    page = browser.new_context().new_page()
                    t0 = time.perf_counter()
                    page.goto(f"{url}/{path}")
                    page.locator(ready).first.wait_for(timeout=180_000)
                    times.append(time.perf_counter() - t0)
                    page.context.close()
                print(f"| {name} | {times[0]:.1f} | {times[1]:.1f} |")
            page = browser.new_context(accept_downloads=True).new_page()
            page.goto(f"{url}/Router_lab")
            page.locator(PAGES[1][2]).first.wait_for(timeout=180_000)
            print("\n| export (router lab, first chart) | seconds |\n|---|---:|")
            for fmt in ("PNG", "SVG", "HTML", "PNG"):
                page.get_by_role("button", name="Export chart").first.click()
                t0 = time.perf_counter()
                with page.expect_download(timeout=180_000) as download:
                    page.get_by_role("button", name=fmt, exact=True).first.click()
                download.value.path()
                print(f"| {fmt} | {time.perf_counter() - t0:.1f} |")
                page.keyboard.press("Escape")
            browser.close()
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


if __name__ == "__main__":
    main()
