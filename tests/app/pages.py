"""Open a page of the app through AppTest against a given run directory."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]


def open_page(monkeypatch, runs_dir, script: str = "app.py") -> AppTest:
    """Run `script` (relative to the repo root) once and fail on any page exception."""
    monkeypatch.setenv("DUET_RUNS_DIR", str(runs_dir))
    at = AppTest.from_file(str(ROOT / script), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def open_sample_case(monkeypatch, runs_dir, sample: int) -> AppTest:
    """The case browser on the smoke run with a valid or test sample's user opened and that
    sample picked (its prompt, examples and generated-weights panels shown)."""
    from engine.store import open_run

    with open_run(runs_dir, "smoke-run") as reader:
        user = str(reader.samples_for(sample_ids=[sample])["user"].iloc[0])
    at = open_page(monkeypatch, runs_dir, "pages/3_Case_browser.py")
    at.text_input(key="cases_query").input(user).run()
    at.selectbox(key="cases_prompt_sample").set_value(sample).run()
    assert not at.exception, at.exception
    return at


# every page of the app: the home script, then pages/ in order
PAGES = ["app.py", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "pages").glob("*.py"))]
