"""What a user feels: from an input event to the last changed element drawn, in Chromium.

    .venv/bin/python bench/interaction_latency.py --runs runs --run RUN_ID
        [--synthetic 1000000] [--repeats 9] [--json bench/interaction_latency.json]
        [--app-dir PATH]

Starts `streamlit run app.py` on 127.0.0.1 against --runs and drives it with Playwright in
Debian's headless Chromium, as a user would: each interaction below is repeated (after one
warm-up) and timed from the moment the input is dispatched (the gesture before it, opening
a list, typing a search or drawing a lasso, is not timed; the option click, Enter or the
release is) until (1) the server has sent
`script_finished` for every script or fragment run the input started (read off the app's
websocket, decoded with Streamlit's own protobuf) and (2) the browser shows no stale element
and has painted two frames since. Prints median and p95 per interaction, and writes JSON.

- the floor: an app of one page with one slider and its value as text, the least any
  Streamlit interaction costs on this machine; and an app of two plotly maps of the demo's
  size (1,681 points, 19 colour groups) whose lasso reruns it, what the maps' own drawing
  costs;
- --synthetic N: a copy of the run whose routed (CoReLLa) table holds N analysed samples per
  split (rows repeated with fresh sample ids and jittered probabilities), for the router
  lab's interactions and page switches;
- --app-dir: time another checkout of the app (e.g. a worktree of the previous commit) in
  the same invocation, for before/after tables side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
SLIDER = '[data-testid="stSlider"] input[type="range"]'
# the app is drawn when no element is stale (kept from the previous run while a new one
# runs) and no status widget says "Running"; then two animation frames so the paint is done
DRAWN_JS = """async () => {
  const idle = () => !document.querySelector('[data-stale="true"]')
      && !document.querySelector('[data-testid="stStatusWidget"]');
  while (!idle()) await new Promise(r => requestAnimationFrame(r));
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  return performance.now();
}"""
Timing = tuple[float, float]  # ms to drawn, ms to the last script_finished
FLOOR_APP = textwrap.dedent("""\
    import streamlit as st
    value = st.slider("Floor slider", 0, 100, 50, key="floor")
    st.write(f"value {value}")
""")
# what two maps of the demo's size cost by themselves: 1,681 points in 19 colour groups,
# built once; a lasso on either reruns the app and rings the chosen points on both
FLOOR_MAPS_APP = textwrap.dedent("""\
    import numpy as np, pandas as pd, plotly.express as px, plotly.graph_objects as go
    import streamlit as st

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=1681), "y": rng.normal(size=1681),
                          "group": rng.integers(0, 19, 1681).astype(str)})

    @st.cache_resource
    def base():
        fig = px.scatter(frame, x="x", y="y", color="group")
        fig.update_layout(dragmode="lasso", height=520)
        return fig.to_dict()

    def chosen(key):
        event = st.session_state.get(key) or {}
        return [(p["x"], p["y"]) for p in (event.get("selection") or {}).get("points", [])]

    ring = sorted(set(chosen("map0")) | set(chosen("map1")))
    for side, column in enumerate(st.columns(2)):
        spec = base()
        spec = {**spec, "data": [*spec["data"], {"type": "scatter", "mode": "markers",
            "x": [x for x, _ in ring], "y": [y for _, y in ring],
            "marker": {"size": 11, "color": "rgba(0,0,0,0)", "line": {"width": 2}}}]}
        column.plotly_chart(go.Figure(spec, _validate=False), key=f"map{side}",
                            on_select="rerun", selection_mode=("points", "box", "lasso"))
""")



def start(app_dir: Path, runs: str, script: str = "app.py") -> tuple[subprocess.Popen, str]:
    """`streamlit run` on a free localhost port; returns the process and its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", script,
                             "--server.port", str(port), "--server.headless", "true",
                             "--server.address", "127.0.0.1"],
                            cwd=app_dir, env={**os.environ, "DUET_RUNS_DIR": runs},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)
            return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"streamlit did not start in {app_dir}")


@dataclass
class ScriptRuns:
    """Counts the script (and fragment) runs the server reports over the page's websocket."""

    finished: int = 0
    running: bool = False
    statuses: list[str] = field(default_factory=list)

    def attach(self, page) -> None:
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        def frame(payload) -> None:
            if isinstance(payload, str):
                return
            msg = ForwardMsg.FromString(payload)
            kind = msg.WhichOneof("type")
            if kind == "script_finished":
                self.finished += 1
                self.statuses.append(ForwardMsg.ScriptFinishedStatus.Name(msg.script_finished))
            elif kind == "session_status_changed":
                self.running = msg.session_status_changed.script_is_running

        page.on("websocket", lambda ws: ws.on("framereceived", frame))


def timed(page, runs: ScriptRuns, action: Callable[[], None], timeout: float = 120.0
          ) -> Timing:
    """Milliseconds from dispatching `action` to the app drawn after every run it caused, and
    to the last run's `script_finished` arriving (the server's share, network included; the
    rest is the browser drawing)."""
    seen = runs.finished
    t0 = page.evaluate("performance.now()")
    action()
    end = time.time() + timeout
    while runs.finished == seen or runs.running:
        if time.time() > end:
            raise SystemExit("the app did not finish a run after the interaction")
        page.wait_for_timeout(2)
    finished = page.evaluate("performance.now()")
    return page.evaluate(DRAWN_JS) - t0, finished - t0


def settle(page, runs: ScriptRuns) -> None:
    """Wait for a page load's runs to end and the page to be drawn."""
    page.wait_for_timeout(300)
    while runs.running:
        page.wait_for_timeout(20)
    page.evaluate(DRAWN_JS)


def open_app(browser, url: str, path: str, ready: str) -> tuple:
    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    runs = ScriptRuns()
    runs.attach(page)
    page.goto(f"{url}/{path}")
    page.locator(ready).first.wait_for(timeout=120_000)
    settle(page, runs)
    return page, runs


Action = Callable[[], None] | tuple[Callable[[], None], Callable[[], None]]


def measure(page, runs: ScriptRuns, actions: list[Action], repeats: int) -> list[Timing]:
    """One warm-up, then `repeats` timed interactions cycling through `actions`. An action
    given as (gesture, input) times only the input: opening a list is the user's gesture,
    the click on an option is the input the app answers."""
    def parts(action: Action) -> tuple[Callable[[], None] | None, Callable[[], None]]:
        return action if isinstance(action, tuple) else (None, action)

    gesture, first = parts(actions[0])
    if gesture is not None:
        gesture()
    first()
    settle(page, runs)
    times = []
    for i in range(repeats):
        gesture, act = parts(actions[(i + 1) % len(actions)])
        if gesture is not None:
            gesture()
        times.append(timed(page, runs, act))
    return times


def key_on(page, selector: str, index: int, key: str) -> Callable[[], None]:
    return lambda: page.locator(selector).nth(index).press(key)


def open_list(page, label: str) -> None:
    """Open the option list of the selectbox labelled `label` (a click on a focused box does
    not, the arrow key always does)."""
    box = page.locator('[data-testid="stSelectbox"]').filter(has_text=label).first
    box.locator("input").click()
    box.locator("input").press("ArrowDown")


def choose(page, label: str, option_text: str) -> tuple[Callable[[], None], Callable[[], None]]:
    """Pick an option of the selectbox labelled `label`: (open its list, click the option)."""
    def pick() -> None:
        page.get_by_role("option", name=option_text, exact=True).first.click()
    return (lambda: open_list(page, label)), pick


def options_of(page, label: str) -> list[str]:
    open_list(page, label)
    page.get_by_role("option").first.wait_for()
    names = [o.inner_text().strip() for o in page.get_by_role("option").all()]
    page.keyboard.press("Escape")
    return names


def router_lab(browser, url: str, run: str, repeats: int) -> dict[str, list[Timing]]:
    page, runs = open_app(browser, url, f"Router_lab?run={run}",
                          '[data-testid="stMetricValue"]')
    out = {"threshold slider step": measure(page, runs, [
        key_on(page, SLIDER, 0, "ArrowLeft"), key_on(page, SLIDER, 0, "ArrowRight")], repeats),
        "budget slider step": measure(page, runs, [
            key_on(page, SLIDER, 1, "ArrowRight"), key_on(page, SLIDER, 1, "ArrowLeft")],
            repeats)}
    radio = page.locator('[data-testid="stRadio"]').first
    out["split switch"] = measure(page, runs, [
        lambda: radio.get_by_text("valid", exact=True).click(),
        lambda: radio.get_by_text("test", exact=True).click()], repeats)
    page.context.close()
    return out


def compare_page(browser, url: str, run: str, repeats: int) -> dict[str, list[Timing]]:
    page, runs = open_app(browser, url, f"Compare?run={run}", '[data-testid="stDataFrame"]')
    names = options_of(page, "Method B")
    if len(names) < 2:
        page.context.close()
        return {}
    picks = [choose(page, "Method B", name) for name in names[-2:]]
    out = {"method switch": measure(page, runs, picks, repeats)}
    page.context.close()
    return out


def case_browser(browser, url: str, run: str, repeats: int) -> dict[str, list[Timing]]:
    page, runs = open_app(browser, url, f"Case_browser?run={run}",
                          '[data-testid="stTextInput"]')
    box = page.get_by_label("Search users and items")

    def search(text: str) -> tuple[Callable[[], None], Callable[[], None]]:
        # typing is the gesture; Enter commits the text input: the input the app answers
        return (lambda: box.fill(text)), (lambda: box.press("Enter"))

    out = {"case search": measure(page, runs, [search("1"), search("2")], repeats)}
    out["open a case"] = measure(page, runs, [
        lambda: page.get_by_role("button", name="Open its user").click(),
        lambda: page.get_by_role("button", name="Open its item").click()], repeats)
    page.context.close()
    return out


def lasso(page, plot, shift: float) -> tuple[Callable[[], None], Callable[[], None]]:
    """A lasso on `plot` around a point `shift` of its width: (draw it, release it). The maps
    open in lasso mode (selection_mode), so a drag draws a lasso; the drawing (17 mouse
    moves, ~0.7 s here) is the user's gesture, the release is the input the app answers."""
    def draw() -> None:
        box = plot.locator(".nsewdrag").first.bounding_box()
        cx, cy = box["x"] + box["width"] * shift, box["y"] + box["height"] * 0.5
        page.mouse.move(cx - 60, cy - 60)
        page.mouse.down()
        for dx, dy in ((60, -60), (60, 60), (-60, 60), (-60, -60)):
            page.mouse.move(cx + dx, cy + dy, steps=4)

    return draw, page.mouse.up


def maps_page(browser, url: str, run: str, repeats: int) -> dict[str, list[Timing]]:
    page, runs = open_app(browser, url, f"Embedding_maps?run={run}", ".js-plotly-plot")
    names = options_of(page, "Colour by")
    out = {"map colouring switch": measure(
        page, runs, [choose(page, "Colour by", n) for n in names[:2]], repeats)}
    plot = page.locator(".js-plotly-plot").first

    out["lasso selection"] = measure(page, runs, [lasso(page, plot, 0.4),
                                                  lasso(page, plot, 0.6)], repeats)
    page.context.close()
    return out


def page_switches(browser, url: str, run: str, repeats: int,
                  pages: tuple[str, ...] = ("Router lab", "Compare", "Case browser",
                                            "Embedding maps", "Home")
                  ) -> dict[str, list[Timing]]:
    """Warm page switches through the sidebar's links, round the given pages."""
    page, runs = open_app(browser, url, f"?run={run}", '[data-testid="stDataFrame"]')
    links = [lambda n=name: page.locator('[data-testid="stSidebar"] a').filter(
        has_text=n).first.click() for name in pages]
    for act in links:  # every page visited once: the warm app
        act()
        settle(page, runs)
    out = {"page switch (warm)": measure(page, runs, links, max(repeats, len(links)))}
    page.context.close()
    return out


def floor(browser, repeats: int) -> dict[str, list[Timing]]:
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "floor.py").write_text(FLOOR_APP)
        proc, url = start(Path(tmp), tmp, "floor.py")
        try:
            page, runs = open_app(browser, url, "", SLIDER)
            times = measure(page, runs, [key_on(page, SLIDER, 0, "ArrowRight"),
                                         key_on(page, SLIDER, 0, "ArrowLeft")], repeats)
            page.context.close()
        finally:
            stop(proc)
    out = {"floor: one slider, one text": times}
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "maps.py").write_text(FLOOR_MAPS_APP)
        proc, url = start(Path(tmp), tmp, "maps.py")
        try:
            page, runs = open_app(browser, url, "", ".js-plotly-plot")
            plot = page.locator(".js-plotly-plot").first
            out["floor: two 1,681-point maps, lasso selection"] = measure(
                page, runs, [lasso(page, plot, 0.4), lasso(page, plot, 0.6)], repeats)
            page.context.close()
        finally:
            stop(proc)
    return out


def synthetic_run(runs: str, run: str, n: int, out_dir: Path) -> str:
    """A copy of `run` whose routing table has n analysed samples per (method, split)."""
    import duckdb

    target = f"{run}-synthetic-{n}"
    path = out_dir / f"{target}.duckdb"
    shutil.copy(Path(runs) / f"{run}.duckdb", path)
    with duckdb.connect(str(path)) as con:
        con.execute("""
            CREATE TEMP TABLE grown AS
            WITH base AS (SELECT *, row_number() OVER (PARTITION BY method, split
                                                       ORDER BY sample_id) - 1 AS k,
                                 count(*) OVER (PARTITION BY method, split) AS m
                          FROM routing),
                 copies AS (SELECT * FROM range(0, (SELECT ceil(? / min(m)) FROM base)::BIGINT)
                            t(c))
            SELECT b.method, b.sample_id + 100000000 * (c + 1) AS sample_id, b.split, b.label,
                   least(greatest(b.p_crm + (hash(c, b.sample_id) % 1000) / 1e5, 1e-4),
                         1 - 1e-4) AS p_crm,
                   least(greatest(b.p_llm + (hash(b.sample_id, c) % 1000) / 1e5, 0), 1)
                       AS p_llm,
                   b.answer, b.sample_id AS original, b.k + c * b.m AS position
            FROM base b, copies
            WHERE b.k + c * b.m < ?""", [n, n])
        con.execute("""
            INSERT INTO samples SELECT s.* REPLACE (g.sample_id AS sample_id)
            FROM (SELECT DISTINCT sample_id, original FROM grown) g
            JOIN samples s ON s.sample_id = g.original""")
        con.execute("DELETE FROM routing")
        con.execute("""INSERT INTO routing BY NAME
            SELECT method, sample_id, split, label, p_crm, p_llm, answer,
                   -(p_crm * log2(p_crm) + (1 - p_crm) * log2(1 - p_crm)) AS entropy
            FROM grown""")
        con.execute("UPDATE run SET run_id = ?", [target])
        con.execute("UPDATE manifest SET rows = (SELECT count(*) FROM routing) "
                    "WHERE table_name = 'routing'")
        con.execute("UPDATE manifest SET rows = (SELECT count(*) FROM samples) "
                    "WHERE table_name = 'samples'")
    return target


def stop(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def summary(timings: list[Timing]) -> dict[str, float]:
    times = sorted(total for total, _ in timings)
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    return {"median_ms": statistics.median(times), "p95_ms": p95, "n": len(times),
            "server_median_ms": statistics.median(server for _, server in timings)}


def run_app(browser, app_dir: Path, runs: str, run: str, repeats: int, synthetic: str | None,
            sections: set[str]) -> dict[str, dict[str, list[Timing]]]:
    proc, url = start(app_dir, runs)
    results: dict[str, dict[str, list[Timing]]] = {}
    try:
        demo: dict[str, list[Timing]] = {}
        for name, fn in (("router", router_lab), ("compare", compare_page),
                         ("cases", case_browser), ("maps", maps_page),
                         ("pages", page_switches)):
            if name in sections:
                print(f"  {app_dir.name}: {name} on {run}", file=sys.stderr)
                demo.update(fn(browser, url, run, repeats))
        results[run] = demo
        if synthetic:
            print(f"  {app_dir.name}: router + pages on {synthetic}", file=sys.stderr)
            big = router_lab(browser, url, synthetic, repeats)
            big.update(page_switches(browser, url, synthetic, repeats,
                                     ("Router lab", "Home")))
            results[synthetic] = big
    finally:
        stop(proc)
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", default="runs")
    parser.add_argument("--run", default="", help="the run to drive (default: the newest "
                        "readable run in --runs, e.g. the demo run)")
    parser.add_argument("--synthetic", type=int, default=0,
                        help="also a copy of the run with this many routed samples per split")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--app-dir", action="append", default=[],
                        help="another checkout to time beside this one (repeatable)")
    parser.add_argument("--sections", default="router,compare,cases,maps,pages")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    sections = set(args.sections.split(","))
    if not args.run:
        sys.path.insert(0, str(ROOT))
        from engine.store import list_runs

        readable = list_runs(args.runs)
        readable = readable[readable["error"] == ""]
        if readable.empty:
            raise SystemExit(f"no readable run in {args.runs}")
        args.run = readable["run_id"].iloc[0]
    with tempfile.TemporaryDirectory() as tmp:
        runs = args.runs
        synthetic = None
        if args.synthetic:  # both runs in one folder the app reads
            runs = tmp
            shutil.copy(Path(args.runs) / f"{args.run}.duckdb", Path(tmp))
            synthetic = synthetic_run(args.runs, args.run, args.synthetic, Path(tmp))
        report: dict = {"apps": {}}
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            report["floor"] = {k: summary(v) for k, v in floor(browser, args.repeats).items()}
            for app_dir in [ROOT, *map(Path, args.app_dir)]:
                found = run_app(browser, app_dir.resolve(), str(Path(runs).resolve()),
                                args.run, args.repeats, synthetic, sections)
                report["apps"][str(app_dir)] = {run: {k: summary(v) for k, v in rows.items()}
                                                for run, rows in found.items()}
            browser.close()
    print_table(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


def print_table(report: dict) -> None:
    apps = list(report["apps"])
    floor_ms = next(iter(report["floor"].values()))["median_ms"]
    header = " | ".join(f"{Path(a).name or a}: median / p95 ms" for a in apps)
    print(f"| run | interaction | {header} | median / floor | until script_finished, ms |")
    print("|---|---|" + "---:|" * (len(apps) + 2))
    for name, row in report["floor"].items():
        cells = " | ".join(f"{row['median_ms']:.0f} / {row['p95_ms']:.0f}" for _ in apps)
        print(f"| – | {name} | {cells} | 1.0 | {row['server_median_ms']:.0f} |")
    first = report["apps"][apps[0]]
    for run, rows in first.items():
        for name in rows:
            cells = []
            for app in apps:
                cell = report["apps"][app].get(run, {}).get(name)
                cells.append(f"{cell['median_ms']:.0f} / {cell['p95_ms']:.0f}" if cell else "–")
            ratio = rows[name]["median_ms"] / floor_ms
            print(f"| {run} | {name} | {' | '.join(cells)} | {ratio:.1f} | "
                  f"{rows[name]['server_median_ms']:.0f} |")


if __name__ == "__main__":
    main()
